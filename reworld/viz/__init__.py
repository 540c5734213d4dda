"""Figures of scenes and plans (plotly), shared by the analysis toolkit and the app."""
