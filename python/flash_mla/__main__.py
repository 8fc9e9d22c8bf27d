"""`python -m flash_mla`: prints the backends, devices and kernels this build has."""
from . import describe_backends

print(describe_backends(), end="")
