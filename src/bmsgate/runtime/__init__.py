"""The running gateway: the client that drives a poll session, the snapshot hub, the supervisor, slots."""
