"""The translator bridge: transcript segments in, one caption per listener language out."""
