"""vdc-operator: a virtual datacenter run declaratively from Kubernetes."""
