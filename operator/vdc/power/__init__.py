"""Out-of-band power management of hosts (the Redfish boundary)."""
