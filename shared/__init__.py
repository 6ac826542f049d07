"""What the gateway and the workers both speak: settings, errors, parameters, job records, storage."""
