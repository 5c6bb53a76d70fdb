"""The documents in docs/, held to the code: what they tell an operator to run is run here."""
