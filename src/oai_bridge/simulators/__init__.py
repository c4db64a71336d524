"""Offline, deterministic fakes of upstream backends (e.g. a go-livepeer AI gateway)."""
