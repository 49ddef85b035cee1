"""The local stack: emulated AWS (moto) plus real Docker containers and a real registry."""

from .stack import LocalStack

__all__ = ["LocalStack"]
