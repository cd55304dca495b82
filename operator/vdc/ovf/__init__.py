"""OVF/OVA packages: descriptor parsing, manifests, safe OVA reading, export, disk conversion.

Pure logic and local-file I/O only; nothing here talks to Kubernetes or libvirt. The Appliance
controller builds on it:

- ``envelope``  parse a descriptor into frozen dataclasses (one per OVF element)
- ``hardware``  the friendly per-system hardware summary (CPUs, memory, disks, NICs, CD-ROMs)
- ``manifest``  ``.mf`` parsing, streaming digests, verification, ``.cert`` structure check
- ``signature`` ``.cert`` verification (signature over the manifest, chain to a trust bundle) and signing
- ``ova``       safe OVA (tar) and OVF-directory reading and streaming extraction
- ``writer``    OVF 1.x descriptor (a system or a vApp), SHA-256 manifest and OVA tar for export
- ``convert``   ``qemu-img info`` / ``convert`` wrappers
- ``environment`` ``ovf-env.xml`` (the property values a deployed guest reads) and the ISO that carries it
- ``units``     DMTF allocation units; ``errors``: the ``OvfError`` family (messages name what is at fault)
"""
