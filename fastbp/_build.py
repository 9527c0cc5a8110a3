"""``python -m fastbp._build PATH DTYPE``: compile one kernel set into the on-disk cache, in a
fresh process (started by :func:`fastbp._cache.require`; see that module's notes)."""
import sys


def main(argv):
    from . import _cache
    if len(argv) != 2 or not _cache._state["builder"]:
        print("usage: python -m fastbp._build PATH DTYPE (started by fastbp itself, with "
              f"{_cache.BUILDER_ENV}=1)", file=sys.stderr)
        return 2
    _cache.build(*argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
