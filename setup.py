"""Build script: the only compiled piece built at install time is the Cython swap engine.

Everything else (the CPU, the Numba swap twin, check_layouts) is compiled by Numba on first use
and cached.  A missing C compiler is reported as one clear error instead of a compiler traceback.
"""
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - pyproject.toml lists Cython as a build requirement
    sys.exit("kjcore: building needs Cython >= 3 (pip installs it from pyproject.toml's build "
             "requirements)")


class BuildExt(build_ext):
    """build_ext that turns a missing or broken C compiler into a readable error."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # distutils raises several unrelated types here
            raise SystemExit(
                "kjcore: could not build the native swap engine kjcore/_swap.pyx: "
                f"{exc}\nInstall a C compiler (Debian: apt-get install gcc python3-dev) and retry."
            ) from exc


extensions = [
    Extension("kjcore._swap", ["kjcore/_swap.pyx"], extra_compile_args=["-O3"]),
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": 3}),
    cmdclass={"build_ext": BuildExt},
)
