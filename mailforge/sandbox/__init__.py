"""The sandbox: a private, real mail stack on loopback high ports (see :mod:`.stack`)."""

from .stack import Sandbox, SandboxError

__all__ = ["Sandbox", "SandboxError"]
