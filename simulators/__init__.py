"""Device, phone and platform simulators. They import ``protocols`` only, never ``gateway`` or
``drivers``, so they stay honest peers of the code under test."""
