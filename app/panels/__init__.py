"""Parts of pages that more than one page draws, or that would make a page too long to read:
charts with export, tables, run pickers (ui), and the new views' figures and panels."""
