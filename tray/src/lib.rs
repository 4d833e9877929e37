//! `vigia-tray`: the Vigía icon by the clock and the report window, for the person at the
//! keyboard, in a program of its own so the agent keeps no desktop code.
//!
//! It talks only to the running agent's local socket (the agent names the reporter from
//! the kernel), shows the device's state as a StatusNotifierItem ([`tray`]), draws its
//! windows with the desktop's dialog program ([`dialog`]) and announces news through
//! desktop notifications ([`notify`]). What to show and announce is decided without I/O
//! in [`state`]; [`app`] is the loop that does the socket, bus and process work.
#![deny(missing_docs)]

pub mod app;
pub mod dialog;
pub mod notify;
pub mod state;
pub mod text;
pub mod tray;

pub use app::{run, Options, TrayError};
