//! `vmx-core`: work in progress.
#![no_std]
