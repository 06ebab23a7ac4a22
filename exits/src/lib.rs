//! `exits`: work in progress.
#![no_std]
