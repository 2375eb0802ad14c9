"""Layer 4: the machine-wide slot registry, one module per job.

- `store`: the registry file (JSON under an exclusive lock in the state
  directory) and its repair from what worktrees and Docker still say;
- `dynamic`: a worktree's `.env.dynamic`, the slot it remembers per ENV;
- `testports`: every claimed copy's footprint and the test-port range a claim gets;
- `slots`: claims on the Docker engine itself (a remote engine, or SLOT_CLAIMS=engine);
- `claims`: THE claim loop (`claim`) over the candidate offsets of
  PORT_OFFSET=auto, a task id or a build number, and `release`.

Nothing is imported here: a caller imports the module it needs (`make env`
of a remembered slot reads `.env.dynamic` without loading the claim machinery).
"""
