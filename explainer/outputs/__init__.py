"""What leaves the program: result records and task files, the HTML report, the terminal view, tables."""
