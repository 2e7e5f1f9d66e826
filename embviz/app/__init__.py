"""The Panel app: components that show a dataset (imports panel and holoviews; load lazily)."""
