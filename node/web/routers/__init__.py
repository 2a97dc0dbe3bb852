"""One router per area of the console; ``api`` is the JSON API under ``/api/v1``."""
