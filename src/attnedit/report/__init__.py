"""Reporting: tables, figures and pages built from run directories."""
