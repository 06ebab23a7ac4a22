//! `ept`: work in progress.
#![no_std]
