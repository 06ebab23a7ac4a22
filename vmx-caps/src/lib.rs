//! `vmx-caps`: work in progress.
#![no_std]
