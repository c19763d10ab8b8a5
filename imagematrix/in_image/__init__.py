"""Standard-library-only code that runs inside images and containers; it imports nothing of imagematrix."""
