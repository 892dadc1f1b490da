"""Test-side name for the shared server runner (lives in the library for the benchmark too)."""

from brain_tumor_dev.server_process import REPO, Server, copy_studies, free_port, isolated_env, snapshot

__all__ = ["REPO", "Server", "copy_studies", "free_port", "isolated_env", "snapshot"]
