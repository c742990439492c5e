"""Report and prompt text: section parsing (sections), sentence splitting (sentences), the prompt template
language (templates, promptfiles) and Marian back-translation (translate)."""
