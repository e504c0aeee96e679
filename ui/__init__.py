"""Streamlit helpers shared by app.py and the pages (widgets, pickers, figures, the access check).

They live outside pages/, where Streamlit would list every file as a page.
"""
