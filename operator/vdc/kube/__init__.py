"""The Kubernetes edge: status patches, events and the object cache. Nothing else talks to the API."""
