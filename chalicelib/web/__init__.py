"""The shared page kit of every server-rendered page: message catalogues (i18n), static assets, and
the locales/ and static/ folders. Chalice packages the whole chalicelib directory, so they deploy with the code.
"""
