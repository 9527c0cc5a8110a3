"""Command line: ``python -m fastbp train`` (the main job) and ``python -m fastbp bench``."""
import sys


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m fastbp {train,bench} [options]\n\n"
              "  train   train a network on the bundled digits set and print its test accuracy\n"
              "  bench   compare training throughput with NumPy, PyTorch and JAX\n\n"
              "python -m fastbp COMMAND --help shows each command's options.")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        from .cli import train_main
        return train_main(rest)
    if command == "bench":
        from .bench import main as bench_main
        return bench_main(rest)
    print(f"fastbp: unknown command {command!r}; expected 'train' or 'bench'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
