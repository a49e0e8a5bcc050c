"""Start EMONAS Studio: ``python main.py [--dataset DIR] [--run DIR] [--screenshot PATH]``."""
from emonas_gui.app import main

if __name__ == "__main__":
    raise SystemExit(main())
