"""One typed, indexed view of the cluster: hosts (facts, schedulable, labels), the VM -> host assignment
with reservations, what a VM requests and the allocation ledger per host, pools and switches per host,
and reverse indexes (VMs on a host, VMs using a switch, pool or appliance). Pure: no I/O.

- ``requests``: ``requested(vm)``, the one definition of what a VM asks for
- ``hosts``: ``HostInfo``, ``schedulable``, ``matching_hosts``, ``pools_by_host``, ``switches_by_host``
- ``index``: the VM indexes, kept incrementally from the VM cache's changes
- ``view``: ``ClusterView``, binding the caches, the host facts and the indexes
- ``watches``: ``Watch``/``ObjectEvent``, what controllers declare they watch (requeue fan-out)
"""

from vdc.cluster.requests import Requested, requested
from vdc.cluster.view import ClusterView
from vdc.cluster.watches import ObjectEvent, Watch

__all__ = ["ClusterView", "ObjectEvent", "Requested", "Watch", "requested"]
