"""The control loop: clocks, the tick and its scheduling."""
