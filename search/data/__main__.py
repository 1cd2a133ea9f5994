"""``python -m search.data``: fetch MNIST if it is missing, verify its md5, print where it is."""

from search.data.fetch import main

if __name__ == "__main__":
    raise SystemExit(main())
