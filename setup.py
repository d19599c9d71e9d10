"""The package's compiled parts (native/, docs/native.md): the receiver's apply core and the FUSE
request loop on libfuse's low-level API.

Everything else is in pyproject.toml. Both extensions are optional for pip: where one cannot be
built, the package installs without it and that part runs in Python (a log line says so);
scripts/setup.sh, for test and lab machines, fails if either was not built.
"""

import subprocess

from setuptools import Extension, setup

FLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror"]


def pkg_config(*args: str) -> list[str]:
    """pkg-config's words for fuse3, or none (the extension then fails to build: optional)."""
    try:
        out = subprocess.run(["pkg-config", *args, "fuse3"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    return out.stdout.split()


setup(ext_modules=[
    Extension(
        "hamirror.link._native",
        sources=["native/hm_apply.c", "native/hm_resolve.c", "native/module.c"],
        depends=["native/hm_apply.h", "native/hm_core.h"],
        extra_compile_args=FLAGS,
        optional=True,
    ),
    Extension(
        "hamirror.fs._lowlevel",
        sources=["native/hm_fuse.c", "native/hm_fuse_py.c", "native/hm_inodes.c", "native/hm_fuse_module.c"],
        depends=["native/hm_fuse.h", "native/hm_inodes.h"],
        extra_compile_args=FLAGS + pkg_config("--cflags"),
        extra_link_args=pkg_config("--libs"),
        optional=True,
    ),
])
