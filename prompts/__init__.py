"""Packaged prompt files (installed as ``cxrprep.prompt_files``); see cxrprep/text/promptfiles.py."""
