"""The exception queue: late, failed, offline, far, long-stop, behind-plan and zone-rule exceptions."""
