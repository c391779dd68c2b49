"""The web console: a static single-page client of the platform's APIs, with its sign-in."""
