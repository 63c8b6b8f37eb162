"""A stand-in for the callback's Display: keeps what the callback prints so a test can read it."""


class FakeDisplay:
    def __init__(self):
        self.lines = []

    def banner(self, text):
        self.lines.append(text)

    def display(self, text):
        self.lines.append(text)

    def warning(self, text):
        self.lines.append("WARNING " + text)
