# Copyright (c) 2019-2024 @OWNER@. All rights reserved.
import os
