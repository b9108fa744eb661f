"""The login screen: user name and password, log in or register."""
from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, Static

from tui.widgets.connection_bar import ConnectionBar

#: What the gateway asks of a new account (dim/gateway's MIN_PASSWORD, MAX_PASSWORD and
#: USER_NAME), shown before the first try.
MIN_PASSWORD = 8
RULES = ("User names: 1-32 of letters, digits, _ . -.  Passwords: at least "
         f"{MIN_PASSWORD} characters.  Registering asks for the password twice.")


class LoginScreen(Screen[None]):
    """Asks for a user name and password; the app does the logging in."""

    CSS_PATH = "login.tcss"
    BINDINGS = [("ctrl+q", "app.quit", "Quit")]

    @dataclass
    class Submitted(Message):
        """The person asked to log in (or register, then log in)."""

        user: str
        password: str
        register: bool

    def __init__(self, user: str | None = None, password: str | None = None,
                 notice: str = "", gateway: str | None = None) -> None:
        super().__init__()
        self.initial_user = user or ""
        self.initial_password = password
        self.notice = notice
        self.gateway = gateway

    def compose(self) -> ComposeResult:
        yield ConnectionBar(id="connection")
        with Vertical(id="login-box"):
            yield Label("Log in to DIM", id="login-title")
            yield Label(f"Gateway: {self.gateway}" if self.gateway else "", id="login-gateway")
            yield Input(value=self.initial_user, placeholder="user name", id="user")
            yield Input(placeholder="password", password=True, id="password")
            yield Input(placeholder="password again (only to register)", password=True,
                        id="confirm")
            yield Static(RULES, id="login-rules")
            with Horizontal(id="login-buttons"):
                yield Button("Log in", variant="primary", id="login")
                yield Button("Register", id="register")
            yield Static(self.notice, id="login-error")
        yield Footer()

    def on_mount(self) -> None:
        user = self.query_one("#user", Input)
        password = self.query_one("#password", Input)
        (password if user.value else user).focus()
        if self.initial_user and self.initial_password:
            password.value = self.initial_password
            self.submit(register=False)

    def submit(self, register: bool) -> None:
        """Hand the form to the app, after checking it is filled in."""
        user = self.query_one("#user", Input).value.strip()
        password = self.query_one("#password", Input).value
        if not user or not password:
            self.show_error("Enter a user name and a password.")
            return
        if register:
            confirm = self.query_one("#confirm", Input)
            if len(password) < MIN_PASSWORD:
                self.show_error(f"The password needs at least {MIN_PASSWORD} characters.")
                return
            if confirm.value != password:
                self.show_error("Type the same password again below to register."
                                if not confirm.value else "The two passwords differ.")
                confirm.focus()
                return
        self.show_error("Registering…" if register else "Logging in…")
        self.post_message(self.Submitted(user, password, register))

    def show_error(self, text: str) -> None:
        """Show a line under the form (an error or progress)."""
        self.query_one("#login-error", Static).update(text)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "user":
            self.query_one("#password", Input).focus()
        elif event.input.id == "confirm":
            self.submit(register=True)
        else:
            self.submit(register=False)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.submit(register=event.button.id == "register")
