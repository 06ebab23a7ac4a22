//! `vmcs`: work in progress.
#![no_std]
