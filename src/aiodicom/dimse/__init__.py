"""DIMSE (PS3.7): command sets, statuses, and the SCU/SCP services over associations."""
