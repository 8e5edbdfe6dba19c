"""A private local Ray for tests that start actors (the package's one way of starting Ray)."""
from __future__ import annotations


def start_local_ray(num_cpus: int = 2, extra_paths: tuple[str, ...] = (), tries: int = 3):
    """A fresh local Ray (never a cluster someone else started here) whose workers run this interpreter."""
    import ray

    from tspo_ray.distributed import init_ray

    if ray.is_initialized():  # another module's Ray (other paths, other CPUs): this module gets its own
        ray.shutdown()
    return init_ray("local", num_cpus=num_cpus, extra_paths=extra_paths, tries=tries, include_dashboard=False,
                    ignore_reinit_error=True, log_to_driver=False)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (for a test's Serve HTTP proxy)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
