"""Revision files (a package only so they ship as package data)."""
