"""`make bench` (`python -m bench`): what isolation costs, against the alternatives, in one run.

measure.py holds the measuring helpers, report.py what a full run writes, sections/ one module per
measurement (registered in sections.SECTIONS), suites/ the test files sections copy into a baked project.
"""
