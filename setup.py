"""The package's compiled parts (native/, docs/native.md): the receiver's apply core and the FUSE
request loop on libfuse's low-level API.

Everything else is in pyproject.toml. The request loop is the mount's only engine: a build that
cannot compile it fails, naming what to install. The apply core stays optional for pip: where it
cannot be built, the package installs without it and the receiver applies in Python (a log line
says so); scripts/setup.sh, for test and lab machines, fails if it was not built.
"""

import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

FLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror"]
NEEDS = ("hamirror.fs._lowlevel (the mount's FUSE request loop) needs libfuse 3's headers and "
         "pkg-config: apt-get install libfuse3-dev pkg-config (on a test machine: scripts/setup.sh)")


def pkg_config(*args: str) -> list[str]:
    """pkg-config's words for fuse3, or none (FuseFirst then stops the build)."""
    try:
        out = subprocess.run(["pkg-config", *args, "fuse3"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    return out.stdout.split()


class FuseFirst(build_ext):
    """Stops a build that cannot find libfuse 3 with one clear line, before the compiler's."""

    def run(self) -> None:
        try:
            subprocess.run(["pkg-config", "--exists", "fuse3"], capture_output=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            raise SystemExit(f"error: {NEEDS}") from None
        super().run()


setup(cmdclass={"build_ext": FuseFirst}, ext_modules=[
    Extension(
        "hamirror.link._native",
        sources=["native/hm_apply.c", "native/hm_resolve.c", "native/module.c"],
        depends=["native/hm_apply.h", "native/hm_core.h", "native/hm_writeback.h"],
        extra_compile_args=FLAGS,
        optional=True,
    ),
    Extension(
        "hamirror.fs._lowlevel",
        sources=["native/hm_fuse.c", "native/hm_fuse_py.c", "native/hm_setattr.c", "native/hm_inodes.c",
                 "native/hm_loop.c", "native/hm_killpriv.c", "native/hm_fuse_module.c"],
        depends=["native/hm_fuse.h", "native/hm_inodes.h", "native/hm_loop.h", "native/hm_killpriv.h",
                 "native/hm_writeback.h"],
        extra_compile_args=FLAGS + pkg_config("--cflags"),
        extra_link_args=pkg_config("--libs"),
    ),
])
