/*
 * Copyright 2023 Fabrikam Inc. All rights reserved.
 * This software is proprietary and confidential.
 */
public class Ledger {}
