"""The torch reference: train the reference networks and move networks between torch and numpy."""
