"""neutron-server's ``api_extensions_path`` for isthmus: the folder it loads extension descriptors from.

neutron-server executes every ``*.py`` file here not starting with ``_`` as a module named after the file,
and expects the class ``Filename`` in it (``infrastructure.py`` -> ``Infrastructure``).
"""
