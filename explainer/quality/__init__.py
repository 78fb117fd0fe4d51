"""Are the explanations right? Scores against gold labels, and calibration of the questions."""
