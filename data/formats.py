"""What the sources' files may hold, said once for the settings (which check the values given)
and the readers (which apply them); no imports, so both can use it."""

MAX_IMAGE_PIXELS = 178_956_970  # PIL's own refusal threshold (2 x 89,478,485), about 13,000 x 13,000
DELIMITERS = {"comma": ",", "tab": "\t", "semicolon": ";", "space": None}  # None: any run of whitespace
