"""``python -m convergent.server`` = ``convergent serve`` (same flags)."""

from convergent.server.cli import main

if __name__ == "__main__":
    main(["serve", *__import__("sys").argv[1:]])
