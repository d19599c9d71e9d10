"""The package's one compiled part: the receiver's apply core (native/, docs/native.md).

Everything else is in pyproject.toml. The extension is optional for pip: where it cannot be
built, the package installs without it and the receiver applies in Python (a log line says so);
scripts/setup.sh, for test and lab machines, fails if it was not built.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "hamirror.link._native",
    sources=["native/hm_apply.c", "native/module.c"],
    depends=["native/hm_apply.h"],
    extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror"],
    optional=True,
)])
