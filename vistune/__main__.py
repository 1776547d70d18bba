"""`python -m vistune` runs the CLI (handy under torchrun / accelerate launch)."""

from vistune.cli import main

if __name__ == "__main__":
    main()
