"""`python -m dr.sandbox serve --dir DIR`: the sandbox process that `dr sandbox up` starts."""

from dr.sandbox import daemon

if __name__ == "__main__":
    daemon.main()
